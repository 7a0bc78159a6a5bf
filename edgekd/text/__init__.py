"""Text classification: raw strings in a table become int32 token ids, a text student distilled from a text teacher,
and an artifact whose runner tokenizes raw strings on the device.

- ``tokenizer.py``: the WordPiece vocabulary (trained on the training split, or a Hugging Face teacher's), shipped
  as ``vocab.txt`` + ``tokenizer.json``; ``runner.py`` holds its pure-Python twin.
- ``data.py``: ``--text-column`` tables read and tokenized (bad columns refused).
- ``students.py``: the text registry and teachers inside a build (budget sizing, the default teacher, ``--teacher
  DIR``).
- ``models/``, ``teachers.py``, ``kd.py``: the networks, the teachers and the TinyBERT-style transfer.
"""
