"""The extension points: one module per component kind, each holding the interface a
plugin of that kind implements (network, loss, sampler, schedule, store, importer,
augmentation, metric, method). :mod:`duoseg.core` re-exports every one."""
