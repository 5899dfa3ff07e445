"""The live lane service (`reid edge`): one process per checkout lane on a small CPU box, or one
process for several lanes (`[[lane]]` tables) sharing the gallery and its ONNX session.

It runs `retail_reid.pipeline.lane.LaneProcessor`, as the replay does, on frames read in real time
and POS events received as they happen, and sends the alerts on. Evidence crops and lane frames are written by
`retail_reid.pipeline.evidence` (skipped, never fatal, when the disk is short). The parts, each in
its own module:

| module | holds |
| --- | --- |
| `settings` | the `[edge]` tables of lane.toml (`EdgeConfig`), `load_edge_lanes` and `load_edge_config` |
| `camera` | `CameraFeed`: camera / stream / paced video file, reconnection, `FrameQueue` |
| `pos_intake` | `PosInbox`, `parse_pos_body` (HTTP), `PosFileTailer` (a JSON-lines file the POS appends to) |
| `pos_record` | `PosRecord`: STATE/pos.jsonl, the POS events the lane received, rotated at a size cap |
| `alert_log` | `AlertLog`: events.jsonl with sequence numbers that continue across restarts |
| `outbox` | `OutboxSender`: the delivery loop of the alert log to one receiver (cursor, retries, dead letters) |
| `dead_letters` | `DeadLetters`: alerts a receiver refused for good, set aside and re-sendable |
| `webhook` | `WebhookClient`, `WebhookSender`: one POST per alert, no redirects followed, signed with a secret |
| `mqtt` | `MqttLink`, `MqttPublisher`: alerts, availability and POS events over MQTT (the `mqtt` extra) |
| `clips` | `ClipRing`, `ClipEvidenceWriter`: clips of alert passes from a bounded ring of recent frames |
| `lane_worker` | `LaneWorker`: the thread that feeds frames and POS events to the lane, and its evidence crops |
| `gallery_watch` | `GalleryWatcher`: follows newly published gallery versions |
| `metrics` | the service's Prometheus registry (prometheus-client) and each lane's series in it |
| `http_api` | the loopback HTTP API: POST /pos, GET /events, /health, /metrics (per lane: /lanes/NAME/...) |
| `worker` | `Worker`: the base of the threads above (start, stop with join and timeout, failure kept, restart) |
| `supervisor` | `Supervisor`: a dead thread named in health, counted, restarted with back-off, or the service stopped |
| `lane_service` | `LaneService`: one lane's parts, its state folder and its health |
| `service` | `EdgeService`: the shared gallery and HTTP server and the lanes; starts, supervises and stops them |
| `log_format` | `--log-format`: text, or one JSON object per line |
| `cli` | `reid edge` and `reid edge dead-letters` |
"""
