"""Diagnostic codes of live sources (block MC05xx).

=======  ========  ===============================================================
Code     Severity  Meaning
=======  ========  ===============================================================
MC0500   warning   A kind meshcore reads is not served by the API server (its
                   CustomResourceDefinition is not installed): it is not watched,
                   and the source looks for it again from time to time.
=======  ========  ===============================================================
"""

from __future__ import annotations

KIND_NOT_SERVED = "MC0500"
