"""The gRPC channel arguments of the control plane's ports: what every port allows a
caller, what the main port (every agent's stream) and the token port (open to anyone
who reaches it) set besides, and why."""

from __future__ import annotations

from fleet.transport import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES

__all__ = ["MAIN_PORT_SERVER_OPTIONS", "SERVER_OPTIONS", "TOKEN_PORT_OPTIONS"]

# A caller may send MAX_REQUEST_BYTES (applies, agent reports) and receive up to
# MAX_MESSAGE_BYTES. The same on the token port, where a request is read only once its
# token is checked (``TokenGate``): a token deploys what a certificate does, and an
# apply of several app files of up to 1 MiB each is one message.
SERVER_OPTIONS = [
    # A second server on a taken port must fail, not take part of its connections
    # (gRPC binds with SO_REUSEPORT unless told not to).
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]

# The main port, where every agent holds its stream. A grpc.aio server takes in one new
# call at a time, one turn of the event loop each, and gRPC keeps the calls not yet
# taken in waiting; past 1,000 waiting it refused more and more of them, all past 3,000
# (its defaults): when 5,000 agents reconnected at once (a control plane restarted),
# thousands were refused, each backing off up to 10 s before its next try, and the
# storm lasted a minute and more. Let them wait instead (they are taken in within
# seconds, a waiting call is a few KiB; past 30 s gRPC still gives up on one).
_MAIN_PORT_OPTIONS = [
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
    # gRPC reads a connection into 8 KiB blocks, or 64 KiB ones once a read has filled
    # most of its target (a heartbeat of 100 containers, a few messages queued in a
    # ramp); the target shrinks by 1% a read, so an agent's connection kept a 64 KiB
    # block for up to ten minutes after (an idle connection holds its last block). Capped,
    # every connection reads into 8 KiB blocks: a large apply is read in more reads.
    ("grpc.experimental.tcp_max_read_buffer_size", 8192),
]
MAIN_PORT_SERVER_OPTIONS = [*SERVER_OPTIONS, *_MAIN_PORT_OPTIONS]

# The token port is open to anyone who reaches it: bound what its connections hold
# before a call is refused. With BDP probing, gRPC grew each stream's receive window
# until a peer without a token had pushed most of its 4 MiB before the refusal (64 such
# calls at once, on 16 connections: +210 MiB; without: +9 MiB). Without it a stream
# reads ahead 64 KiB, so a connection holds at most 16 x 64 KiB that no one asked for,
# 256 connections 256 MiB. The callers are CLI runs and CI jobs, a connection each
# with a call or a followed stream at a time; more streams on a connection wait (they
# are not refused).
TOKEN_PORT_OPTIONS = [
    *SERVER_OPTIONS,
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 64 * 1024),
    ("grpc.max_concurrent_streams", 16),  # per connection
    ("grpc.max_allowed_incoming_connections", 256),
    ("grpc.max_connection_idle_ms", 5 * 60_000),
]
