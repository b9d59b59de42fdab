"""vissl_lite: self-supervised pretraining of timm backbones with on-device augmentation."""

__version__ = "0.1.0"

from vissl_lite.config import RunConfig, make_config  # noqa: E402
from vissl_lite.eval.finetune import finetune  # noqa: E402
from vissl_lite.eval.probe import knn, linear_probe  # noqa: E402
from vissl_lite.pretraining import pretrain  # noqa: E402

__all__ = ["RunConfig", "__version__", "finetune", "knn", "linear_probe", "make_config", "pretrain"]
