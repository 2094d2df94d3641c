"""Prefect flows (finetune now; promote and serve follow) and the `ft` command line."""
