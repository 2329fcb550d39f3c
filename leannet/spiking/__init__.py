"""Spiking neural networks trained with TSSL-BP (Zhang & Li, NeurIPS 2020) or surrogate BPTT.

>>> psc = lif_psc(current)                       # [T, …] currents → [T, …] post-synaptic currents
>>> model = build_model("snn_32C5-P2-64C5-P2-1024", num_classes=10, in_channels=1, image_size=28)

Importing this package registers the models ``snn_<spec>``, the methods ``snn_kernel`` and
``snn_count``, and the event dataset ``nmnist``.
"""

from leannet.spiking import report as _report  # noqa: F401, E402  (registers the report section)
from leannet.spiking.data import NMNIST, bin_event_files, events_to_frames, read_events
from leannet.spiking.layers import LIF, SpikingConv2d, SpikingLinear, SumPool2d, TimeDropout, encode, spiking_neurons
from leannet.spiking.losses import SpikingCount, SpikingKernel, count_loss, kernel_loss, target_train
from leannet.spiking.models import SpikingNet
from leannet.spiking.neurons import lif_psc, lif_psc_spikes, psc_filter

__all__ = [
    "LIF", "NMNIST", "SpikingConv2d", "SpikingCount", "SpikingKernel", "SpikingLinear", "SpikingNet", "SumPool2d",
    "TimeDropout", "bin_event_files", "count_loss", "encode", "events_to_frames", "kernel_loss", "lif_psc",
    "lif_psc_spikes", "psc_filter", "read_events", "spiking_neurons", "target_train",
]
