"""What runs on top of the engine: the ``duoseg`` command line, the demo, and the
built-in data set (synthetic whole-heart phantoms). The engine (:mod:`duoseg.core`)
never imports this package."""
