"""What the plant's data means: the definitions the stream and the lakehouse share.

Each module here is the one definition of something both sides compute, so the live
figures and the batch figures cannot drift apart (docs/domain.md lists them all,
together with the ones that live in ``plantstream.contract`` and ``plantstream.models``).
"""
