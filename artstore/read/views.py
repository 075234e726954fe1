"""The SQL views a store offers, and what each holds: a light module (no DuckDB), for help texts."""

VIEWS = {
    "runs": "one row per run: uri, logs, latest_step, trajectories, groups, exceptions, metric_values, "
            "first_logged_at, last_logged_at",
    "logs": "one row per committed log() call: log_id, split, step, num_groups, num_trajectories, "
            "num_exceptions, num_metrics, table_versions, recorded_at",
    "trajectories": "one row per trajectory (schemas/trajectories.json, without write_id)",
    "groups": "one row per trajectory group (schemas/groups.json, without write_id)",
    "messages": "one row per message: log_id, split, step, group_id, trajectory_id, reward, message_index, "
                "role, content, content_parts, name, tool_calls, tool_names (called), tool_name (answered), "
                "tool_call_id, refusal, trainable, finish_reason, logprobs, recorded_at",
    "metrics": "one row per metric value: log_id, step, split, name, value, recorded_at",
    "history": "one row per log call: step, recorded_at, then one DOUBLE column per metric name",
    "checkpoints": "one row per checkpoint (schemas/checkpoints.json)",
    "configs": "one row per configuration stored: source ('model': Model(config=...), 'train': a TrainConfig), "
               "step, config (JSON text: config->>'learning_rate'), recorded_at",
    "tokens": "one row per training sequence, when a run has a tokens table",
}
