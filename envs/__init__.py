"""Gymnasium environments: the sandboxed browser env, its action language and observation parsing."""
