"""Configuration from the environment: one pydantic-settings class per concern, built once at each entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.images import MAX_BYTES, MAX_PIXELS, Rules, rules_from
from core.models import ModelRegistry, load_registry
from core.spec import MAX_TEXT_CHARS


class RedisSettings(BaseSettings):
    """Where the queue lives. The URL may carry a password: never log it."""

    model_config = SettingsConfigDict(extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="REDIS_URL")


class ModelSettings(BaseSettings):
    """Which models this deployment serves."""

    model_config = SettingsConfigDict(extra="ignore", protected_namespaces=())

    model: str = Field(default="", description="MODEL: a diffusers folder or hub id; empty = the built-in default")
    models_file: Path | None = Field(default=None, description="MODELS_FILE: TOML registry of several models")

    def registry(self) -> ModelRegistry:
        return load_registry(self.model, self.models_file)


class JobSettings(BaseSettings):
    """Limits on what one command may ask for (per-tier limits only tighten these), and where its answers link."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", extra="ignore")

    max_jobs_per_command: int = Field(default=4, ge=1, description="permutations x --repeat cap")
    max_prompt_chars: int = Field(default=1000, ge=1, le=MAX_TEXT_CHARS,
                                  description="may lower, never raise, the hard cap (Discord's option limit)")
    web_url: str = Field(default="", description="IMAGINE_WEB_URL: the web app's public URL (its WEB_PUBLIC_URL); "
                         "when set, Vary (Region) links the web's editor, where a region is drawn freely")


class WorkerSettings(BaseSettings):
    """One worker process."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", protected_namespaces=())

    model: str = Field(default="", description="registry name of the model this worker serves; empty = default")
    device: str = Field(default="", description="torch device; empty = cuda when available, else cpu")
    upscaler: str = Field(
        default="",
        description="Upscale (2x) model: a diffusers folder or hub id of a StableDiffusionLatentUpscalePipeline "
        "(stabilityai/sd-x2-latent-upscaler), loaded once at start; empty = Lanczos resize and a light img2img pass",
    )
    inpaint_unet: str = Field(
        default="",
        description="Zoom Out, Pan and Vary (Region): a dedicated inpainting checkpoint of the model's family (a "
        "diffusers folder or hub id; only its 9-channel UNet is loaded, once at start); empty = the embedded model's "
        "own (model/embedded/inpaint) for builtin:embedded; for others the model's own UNet, by masked latent "
        "blending",
    )
    job_timeout_s: int = Field(default=600, ge=1, description="a job running longer than this fails")
    image_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="how long grids and images stay in Redis")
    preview_interval_s: float = Field(default=1.5, ge=0.0, description="minimum time between progress previews")
    # RQ tuning: a job whose worker was SIGKILLed is re-run by another worker within
    # job_heartbeat_ttl_s + maintenance_interval_s + (worker_ttl_s - 15) seconds (about 60 s with these defaults;
    # RQ's own defaults leave it about 10 minutes).
    job_monitoring_interval_s: int = Field(default=10, ge=1, description="heartbeat of a running job, every N s")
    job_heartbeat_ttl_s: int = Field(default=30, ge=2, description="a running job silent for N s is abandoned")
    worker_ttl_s: int = Field(default=30, ge=16, description="RQ worker_ttl; an idle worker wakes every N - 15 s")
    maintenance_interval_s: int = Field(default=15, ge=1, description="how often registries are cleaned, in s")
    batch_size: int = Field(
        default=4, ge=1, le=16,
        description="grids per sampler call: a worker that takes a grid job also claims up to N-1 waiting grid jobs "
        "it would run next that can share the call (README, Batching); 1 = one job at a time",
    )
    dtype: str = Field(default="auto", pattern="^(auto|fp16|bf16|fp32)$",
                       description="weights: auto = fp16 on CUDA, fp32 on CPU; or fp16, bf16, fp32")
    compile: bool = Field(default=False, description="torch.compile the UNet and warm it up at start (CUDA)")
    test_step_delay_s: float = Field(default=0.0, ge=0.0, description="tests only: sleep N s after each sampling step")


class DiscordSettings(BaseSettings):
    """How to reach Discord: the bot token, and where the API is (the emulator in tests)."""

    model_config = SettingsConfigDict(extra="ignore")

    discord_token: SecretStr | None = Field(default=None, description="DISCORD_TOKEN (required by the bot)")
    discord_api_base: str = Field(default="https://discord.com/api/v10", description="DISCORD_API_BASE")
    discord_gateway_url: str = Field(default="wss://gateway.discord.gg/", description="DISCORD_GATEWAY_URL")
    dev_guild_id: int | None = Field(default=None, description="DEV_GUILD_ID: sync commands to this guild only")

    @field_validator("dev_guild_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """docker compose passes `DEV_GUILD_ID=` for an unset variable: treat "" as not set."""
        return None if isinstance(value, str) and not value.strip() else value


class AdminSettings(BaseSettings):
    """Who may run `/admin` besides members with Manage Server: role and user ids, comma-separated in the env."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", extra="ignore")

    admin_role_ids: str = Field(default="", description="IMAGINE_ADMIN_ROLE_IDS: Discord role ids, comma-separated")
    admin_user_ids: str = Field(default="", description="IMAGINE_ADMIN_USER_IDS: Discord user ids, comma-separated")

    @field_validator("admin_role_ids", "admin_user_ids")
    @classmethod
    def _ids(cls, value: str) -> str:
        """Only Discord ids (digits), so a typo fails at start-up rather than never matching."""
        ids = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in ids if not v.isdigit()]
        if bad:
            raise ValueError(f"not Discord ids: {', '.join(bad)}")
        return ",".join(ids)

    def roles(self) -> frozenset[str]:
        return frozenset(filter(None, self.admin_role_ids.split(",")))

    def users(self) -> frozenset[str]:
        return frozenset(filter(None, self.admin_user_ids.split(",")))


class ImageSettings(BaseSettings):
    """Images members give (image prompts, `/blend`, `/describe`): where they may come from, how much is read, and
    the models that read them. Built by the bot (to check links before admission) and by the worker (to fetch)."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_IMAGE_", extra="ignore")

    hosts: str = Field(default="", description="hosts images may also come from, comma-separated (Discord's "
                       "cdn.discordapp.com and media.discordapp.net always may)")
    max_bytes: int = Field(default=MAX_BYTES, ge=1024, description="largest image file read, in bytes")
    max_pixels: int = Field(default=MAX_PIXELS, ge=64 * 64, description="largest image, in pixels (from its header)")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="seconds to connect to an image's host")
    read_timeout_s: float = Field(default=10.0, gt=0, description="seconds to wait for each read of an image")
    captioner: str = Field(default="", description="/describe: a transformers image-to-text model (hub id or "
                           "folder, e.g. Salesforce/blip-image-captioning-base) loaded at start; empty = the "
                           "embedded model's own describer")
    ip_adapter: str = Field(default="", description="image prompts and /blend through an IP-Adapter loaded at start: "
                            "<hub id or folder>:<weights file>, e.g. h94/IP-Adapter:models/ip-adapter_sd15."
                            "safetensors (its image_encoder folder beside it); empty = img2img from the images")
    test_allow_http: bool = Field(default=False, description="tests only: allow plain http links")
    test_trusted_origins: str = Field(default="", description="tests only: host:port pairs exempt from the "
                                      "address rule (the emulator serving attachments on 127.0.0.1)")

    def rules(self) -> Rules:
        """The fetching rules these settings make."""
        return rules_from(
            self.hosts.split(","),
            https_only=not self.test_allow_http,
            trusted=frozenset(o.strip().lower() for o in self.test_trusted_origins.split(",") if o.strip()),
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
        )
