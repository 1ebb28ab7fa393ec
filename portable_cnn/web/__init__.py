"""The local page that shows the network seeing, deciding and learning: ``portable-cnn serve`` and ``train --live``.

:mod:`.snapshot` holds a model as host (NumPy) copies and explains a drawing with it; :mod:`.live` shares the
latest snapshot and the epochs so far between the run and the server; :mod:`.server` answers the page and its
JSON API; ``static/`` is the page itself (HTML, JS modules, CSS: no CDN, no fonts, no build step).
"""
