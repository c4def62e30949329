"""medsft: supervised fine-tuning of chat LLMs on domain data, without the forgetting."""

__version__ = "0.1.0"
