"""custval: customer value from raw customer data.

The path data takes: sources -> contracts -> customer 360 -> features -> models -> store/API.
See the README for the two-command quickstart.
"""

from custval.errors import CustvalError

__version__ = "0.1.0"
__all__ = ["CustvalError", "__version__"]
