"""The web app's settings, from the environment (WEB_*), built once in `web.__main__`."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    """One web process. Secrets have no default; `public_url` is where browsers reach the app (its OAuth2 redirect
    is `<public_url>/auth/callback`, registered in Discord's developer portal)."""

    model_config = SettingsConfigDict(env_prefix="WEB_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="WEB_HOST: address to listen on (0.0.0.0 in a container)")
    port: int = Field(default=8080, ge=0, le=65535, description="WEB_PORT; 0 = a free port")
    public_url: str = Field(default="http://127.0.0.1:8080", description="WEB_PUBLIC_URL: the app's origin")
    session_secret: SecretStr = Field(description="WEB_SESSION_SECRET: signs session cookies (32+ random bytes)")
    discord_client_id: str = Field(description="WEB_DISCORD_CLIENT_ID: the application's OAuth2 client id")
    discord_client_secret: SecretStr = Field(description="WEB_DISCORD_CLIENT_SECRET")
    discord_authorize_url: str = Field(default="https://discord.com/oauth2/authorize",
                                       description="WEB_DISCORD_AUTHORIZE_URL (the emulator's in tests)")
    guild_ids: str = Field(description="WEB_GUILD_IDS: the servers whose members may sign in, comma-separated")
    session_max_age_s: int = Field(default=12 * 3600, ge=60,
                                   description="a session (and the admin rights it saw at sign-in) lasts this long")
    page_size: int = Field(default=24, ge=1, le=200, description="jobs per gallery page")

    @field_validator("guild_ids")
    @classmethod
    def _ids(cls, value: str) -> str:
        ids = [v.strip() for v in value.split(",") if v.strip()]
        if not ids or not all(v.isdigit() for v in ids):
            raise ValueError("WEB_GUILD_IDS must list Discord server ids (digits), comma-separated")
        return ",".join(ids)

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("WEB_SESSION_SECRET must be at least 16 characters")
        return value

    def guilds(self) -> tuple[str, ...]:
        return tuple(self.guild_ids.split(","))

    @property
    def origin(self) -> str:
        """`scheme://host[:port]` of `public_url`: what a same-site request's Origin header is."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure when the app is served over HTTPS."""
        return self.public_url.startswith("https://")

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/auth/callback"
