"""Label smoothing regularization (LSR) as a recipe method: `lsr`, also named `label_smoothing`."""

from __future__ import annotations

from torch import Tensor, nn

from leannet.distill.losses import label_smoothing_loss
from leannet.errors import LeannetError
from leannet.method import Method, register_method


@register_method("lsr")
@register_method("label_smoothing")
class LabelSmoothing(Method):
    """Cross-entropy against smoothed labels (LSR, Szegedy et al. 2016, Eq. in §7; Tf-KD paper Eq. 2).

    `leannet.distill.label_smoothing_loss`: ε spread over the K−1 wrong classes. Also named `lsr`.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, smoothing: float = 0.1) -> None:
        super().__init__(model, num_classes)
        if not 0.0 <= smoothing < 1.0:
            raise LeannetError(f"method.smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        logits = self.model(x)
        return {"loss": label_smoothing_loss(logits, y, self.smoothing), "logits": logits}
