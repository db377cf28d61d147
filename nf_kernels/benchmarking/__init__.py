"""Side-by-side speed measurements of the coupling ops and of flow models (SPEC section 4).

``benchmarks/run.py`` and ``nf-kernels bench`` both run a plan with :func:`presets.run_plan`; the pieces can also be
used alone, each imported from the module that defines it:

    >>> from nf_kernels.benchmarking.cases import op_cases
    >>> from nf_kernels.benchmarking.op_runner import run_cases
    >>> from nf_kernels.benchmarking.report import format_table
    >>> results = run_cases("cpu", list(op_cases([2**20], ["fp32"], ["affine"])))  # doctest: +SKIP
    >>> print(format_table(results))  # doctest: +SKIP
    | op | direction | mask | dtype | size | eager ms | compile ms | cpu ms | best | GB/s | % ceiling | ...

Each result carries its median time (and every round's, with ``rounds``), the SPEC byte count, GB/s, the fraction
of the copy bandwidth (the ceiling) measured in the same run, whether the case fits in the last-level cache,
speedups over eager and ``torch.compile`` of the reference, and peak memory (CUDA).

The modules, each using only those above it:

* ``cases``: what one op benchmark measures (:class:`~.cases.OpCase`) and the grid of them (``op_cases``).
* ``byte_model``: the SPEC cost model, the bytes a case moves (which turns a time into GB/s).
* ``providers``: the contenders: eager and ``torch.compile`` of the reference, and the fused backends.
* ``timing``: timing one call on each device, its peak memory, CPU memory kept mapped, the progress bar.
* ``machine``: what the device's memory can do: copy bandwidth (the ceiling) and last-level cache.
* ``environment``: where and on what a run ran (commit, versions, device, load).
* ``op_runner`` and ``model_runner``: running op cases and model training steps.
* ``peer_models``: the same RealNVP in nf_kernels and in normflows, nflows, zuko and FrEIA, and the same NSF in
  nf_kernels, nflows and zuko, one interface.
* ``training_step``: their training steps timed round-robin against each other, and the report
  (``benchmarks/training_step.py``); ``step_profile``: where one step's time goes, per layer kind.
* ``nsf_quality``: the NSF trained in each of those libraries alike, its test NLL or bits/dim
  (``benchmarks/nsf_quality.py``).
* ``targets``: the speed targets, judged on a run's results.
* ``report``: markdown tables, timing warnings, plots, the JSON record and the file names.
* ``presets``: the named plans, and ``run_plan``, which runs one start to finish.
* ``spline_cases``, ``spline_peers``, ``spline_op_runner``, ``spline_op_report``: the spline op benchmark
  (``benchmarks/spline_op.py``): its cases, nflows' and zuko's splines and their agreement with ours, the
  round-robin timing against them (eager and ``torch.compile``), the report. Its byte model is in ``byte_model``.
"""
