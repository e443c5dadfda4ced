/** The ext_proc filter's counters, named after Envoy's (http.<prefix>.ext_proc.*). */
export interface ExtProcFilterStats {
  streams_started: number;
  streams_closed: number;
  streams_failed: number;
  stream_msgs_sent: number;
  stream_msgs_received: number;
  spurious_msgs_received: number;
  message_timeouts: number;
  failure_mode_allowed: number;
  rejected_header_mutations: number;
  override_message_timeout_received: number;
  override_message_timeout_ignored: number;
}

export function emptyFilterStats(): ExtProcFilterStats {
  return {
    streams_started: 0,
    streams_closed: 0,
    streams_failed: 0,
    stream_msgs_sent: 0,
    stream_msgs_received: 0,
    spurious_msgs_received: 0,
    message_timeouts: 0,
    failure_mode_allowed: 0,
    rejected_header_mutations: 0,
    override_message_timeout_received: 0,
    override_message_timeout_ignored: 0,
  };
}
