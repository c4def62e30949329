"""The forgetting lab: tiny local base models, synthetic worlds, lab variants, the demo."""
