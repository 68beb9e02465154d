"""Thin adapters from trained-network weights to ConvOperator."""
