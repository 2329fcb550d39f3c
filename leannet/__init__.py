"""leannet: eight papers' techniques as composable components for any PyTorch model."""

__version__ = "0.1.0"
