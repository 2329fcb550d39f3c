"""Draw example procedural scenes and their ground truth as a PNG grid (docs/scenes.md).

    python scripts/scenes_examples.py --out results/scenes/examples.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from leannet.data.scenes import COLORS, RGB, SCENE_TYPES, SHAPES, TEXTURES, make_scenes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/scenes/examples.png"))
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scenes = make_scenes(args.rows, args.seed, args.size)
    columns = ["image", f"segmentation\n(0=bg, {', '.join(SHAPES)})", "depth", "normals", "edges",
               "colour concept", f"texture\n({', '.join(TEXTURES)})"]
    fig, axes = plt.subplots(args.rows, len(columns), figsize=(1.6 * len(columns), 1.7 * args.rows))
    for i in range(args.rows):
        panels = [
            (scenes.image[i].transpose(1, 2, 0), {}),
            (scenes.segmentation[i], {"cmap": "tab10", "vmin": 0, "vmax": 9, "interpolation": "nearest"}),
            (scenes.depth[i], {"cmap": "viridis_r"}),
            ((scenes.normals[i].transpose(1, 2, 0) + 1) / 2, {}),
            (scenes.edges[i], {"cmap": "gray", "interpolation": "nearest"}),
            (RGB[scenes.color[i]].astype(np.uint8), {"interpolation": "nearest"}),
            (scenes.texture[i], {"cmap": "Set2", "vmin": 0, "vmax": 7, "interpolation": "nearest"}),
        ]
        for j, (img, kw) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=7)
        axes[i, 0].set_ylabel(SCENE_TYPES[scenes.scene[i]], fontsize=8)
    fig.suptitle(f"procedural scenes (seed {args.seed}, {args.size}px); palette: {', '.join(COLORS)}", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
