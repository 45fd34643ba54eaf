"""Batch work on a Ray cluster: indexing an archive, analysing or redacting many videos.

Replicas of ``regard serve`` sharing one PostgreSQL catalog scale serving; what one machine
cannot do is the batch work (ten million photos, a thousand hours of footage, in a day). Regard
hands that to Ray rather than growing its own scheduler, and keeps its accountability intact:

- **The batch is a job row** in the shared catalog (kind ``IndexBatch``, ``VideoBatch`` or
  ``RedactionBatch``), with the ``CallContext`` of the principal who started it. Workers read
  the context, the collection and the options from that row, not from the driver's messages,
  and write through the service's gate (``RegardService.index_detected_faces``,
  ``run_audited``): the same scopes, policy, consent rules and ledger entries as a request.
- **The driver** (``regard index ... --ray ADDRESS``) lists the work (paths, or object names
  under an ``s3://`` prefix: names only, it reads no image), sends chunks of references to Ray
  tasks, and reports progress: the CLI's bar, the job's progress (``regard jobs show``) and the
  server's ``/metrics``. It holds the job's lease; a driver restarted with the same command
  takes the same job over once that lease has lapsed.
- **Workers** (Ray worker processes on any node) read each image where it is (a path all nodes
  see, or the object store), hash it, skip it when the collection already has it, detect and
  embed with the collection's face-model pack, and index it under the collection's row lock
  with ``once=True``: a task retried after its node died, or a batch run again after its driver
  was killed, indexes every image once.

Modules: ``sources`` (listing and reading references), ``batch`` (the job row, the tally),
``worker`` (what runs in a Ray worker process; no Ray import), ``ray_driver`` (Ray itself,
imported only when ``--ray`` is given).
"""

# The batches' job kinds (rows no JobRunner claims: their driver holds them).
INDEX_BATCH = "IndexBatch"
VIDEO_BATCH = "VideoBatch"
REDACTION_BATCH = "RedactionBatch"
BATCH_KINDS = (INDEX_BATCH, VIDEO_BATCH, REDACTION_BATCH)
