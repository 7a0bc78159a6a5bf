"""Measuring on devices through their own tools, where edgekd's Python runner cannot run or cannot see the
accelerator: an Android phone over ``adb`` with TFLite's ``benchmark_model`` and its delegate (``android.py``), a
Jetson through TensorRT's ``trtexec`` over SSH (``tensorrt.py``). Each tool's output is parsed by its own module
(``benchmark_model.py``, ``trtexec.py``) into the records of ``records.py``; ``gate_rules.py`` judges them and
``report_rows.py`` shows them. The results join ``report.json`` ``device_results[]`` like any device's."""
