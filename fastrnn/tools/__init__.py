"""The tooling behind the ``fastrnn`` command: ``fastrnn info`` (:mod:`fastrnn.tools.info`) and
``fastrnn bench-report`` (:mod:`fastrnn.tools.bench_report`)."""
