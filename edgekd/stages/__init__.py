"""The build's stages, one module each, in the order ``edgekd.api.build`` runs them (a regular package, so the
import contracts in pyproject.toml see its modules)."""
