"""Optional integrations. Each submodule imports its third-party package only when it is itself imported, and
raises an ImportError naming the extra to install when the package is missing; ``import adaptive_focal`` imports
none of them."""
