"""Local emulators of the tools' APIs (Salesforce, HubSpot, Zendesk, Asana, Stripe, Slack) over one seeded company.

Each tool is served under its own prefix with the vendor's real paths; `/_sandbox` exposes ground truth, fault
knobs, stats and mutations. See docs/contracts.md.
"""

from .app import SandboxState, build_app
from .data import World, build_world
from .env import sandbox_credentials, sandbox_env
from .server import RunningSandbox, SandboxClient, running_sandbox, sandbox_process, serve

__all__ = ["RunningSandbox", "SandboxClient", "SandboxState", "World", "build_app", "build_world", "running_sandbox",
           "sandbox_credentials", "sandbox_env", "sandbox_process", "serve"]
