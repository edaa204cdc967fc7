"""The churn pipeline: its tables, features, model, training, evaluation and scoring, and the
settings the generic modules (``evaluation``, ``training``) take from it."""

from pathlib import Path

#: The registered model's default name (a deployment setting may name another).
MODEL_NAME = "churn"
#: The promotion gate's thresholds and the operating threshold (``GateConfig``).
PROMOTION_CONFIG = Path(__file__).with_name("promotion_config.json")
