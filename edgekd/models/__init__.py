"""Model architectures (a registry, one builder per family), teachers and budget fitting."""
