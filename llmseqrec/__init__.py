"""LLMSeqRec: LLM-enhanced sequential recommendation, operated with Prefect, MLflow and Feast."""
