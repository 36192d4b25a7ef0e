"""Weights on the move: the sync transport (learner -> engines) and the LoRA adapter format both sides share."""
