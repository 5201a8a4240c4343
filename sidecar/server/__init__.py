"""The sidecar's gRPC server: the agent-facing ToolGateway and the process that hosts it."""
