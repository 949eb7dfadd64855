"""Image kinds: one interface per kind, the launch-cluster.sh container flags, the Spark build spec, the preflight."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from project import server_command

from specsweep.config.compose import ConfigError, compose_cell
from specsweep.docker_engine import EngineError
from specsweep.images.base import BACKENDS, backend_of
from specsweep.images.container import in_hf_home, run_flags
from specsweep.images.preflight import compare, needs_of
from specsweep.images.spark_docker import build_argv, built_tag, check_built_spec, parse_build_metadata, spec_key
from specsweep.records.image import Needs

ROOT = Path(__file__).resolve().parents[1]
SPARK = ["image=spark_vllm_docker", "serve=spark", "model=gemma4_31b_it", "bench=tasks"]


def test_every_image_option_has_a_kind_and_nothing_outside_images_branches_on_it() -> None:
    from typing import get_args

    from specsweep.config.schema import ImageCfg

    options = sorted(path.stem for path in (ROOT / "conf/image").glob("*.yaml"))
    assert len(options) >= 4
    for option in options:
        image = compose_cell([f"image={option}"]).cell.image
        assert type(backend_of(image)) is BACKENDS[image.kind]
    # The whole lifecycle is behind ImageBackend: no module outside specsweep/images asks which kind it has.
    classes = "|".join(cls.__name__ for cls in get_args(get_args(ImageCfg)[0]))
    kinds = "|".join(BACKENDS)
    pattern = re.compile(rf"image\.kind\s*==|kind\s*==\s*[\"'](?:{kinds})[\"']|isinstance\([^)]*(?:{classes})")
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "src/specsweep").rglob("*.py")
        if "images" not in path.parts and pattern.search(path.read_text())
    ]  # fmt: skip
    assert offenders == []


def test_spark_container_flags_are_launch_cluster_solo(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "owner"))  # a user's home, not root's
    monkeypatch.delenv("HF_HOME", raising=False)
    image = compose_cell(SPARK).cell.image
    flags = run_flags(image.container)
    home = Path.home()
    # launch-cluster.sh --solo: docker run --privileged --ulimit nofile=1048576:1048576 --ipc=host ... --gpus all
    # -d --rm --network host --name vllm_node --entrypoint= -e NCCL_IGNORE_CPU_AFFINITY=1
    # -e PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True -v $HF_CACHE_DIR:/root/.cache/huggingface + cache mounts
    assert flags[:6] == ["--privileged", "--ulimit", "nofile=1048576:1048576", "--ipc=host", "--gpus", "all"]
    assert flags[6:10] == ["--rm", "--network", "host", "--entrypoint="]
    pairs = {flags[i + 1] for i, flag in enumerate(flags) if flag in ("-e", "-v")}
    assert {"NCCL_IGNORE_CPU_AFFINITY=1", "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True", "VLLM_HOST_IP=127.0.0.1"} <= pairs
    # Different on purpose: each cache at its host path, HF_HOME and HOME set to them (a container that runs as the
    # calling user cannot enter /root, 0700 in Ubuntu-based images).
    hf = home / ".cache/huggingface"
    assert {f"{hf}:{hf}", f"HF_HOME={hf}", f"HOME={home}"} <= pairs and not any("/root" in pair for pair in pairs)
    for relative in (".cache/vllm", ".cache/flashinfer", ".triton", ".tilelang"):
        assert f"{home / relative}:{home / relative}" in pairs


def test_cpu_container_flags_drop_the_gpu_parts() -> None:
    flags = run_flags(compose_cell(["image=vllm_cpu_docker"]).cell.image.container)
    assert "--gpus" not in flags and "--privileged" not in flags and "--ipc=host" not in flags
    assert ["--rm", "--network", "host", "--entrypoint="] == flags[:4]


def test_hf_home_paths_are_seen_through_its_mount_and_others_mount_read_only(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snapshot = tmp_path / "hf/hub/models--google--gemma-4-31B-it/snapshots/abc"
    assert in_hf_home(str(snapshot)) and not in_hf_home("/data/models/m")
    in_hub = server_command(compose_cell(["image=vllm_cpu_docker"]).cell, str(snapshot), 8000).argv
    assert f"{tmp_path / 'hf'}:{tmp_path / 'hf'}" in in_hub and not any(a.startswith(f"{snapshot}:") for a in in_hub)
    assert in_hub[in_hub.index("--model") + 1] == str(snapshot)
    cell = compose_cell(["image=vllm_cpu_docker"]).cell
    argv = server_command(cell, "/data/models/m", 8000, labels={"specsweep.cell": "/r/c"}).argv
    assert "/data/models/m:/data/models/m:ro" in argv and "specsweep.cell=/r/c" in argv
    assert argv[argv.index("--model") + 1] == "/data/models/m"


def test_forwarded_secrets_go_by_name_only() -> None:
    cell = compose_cell(["image=vllm_cpu_docker", "serve.forward_env=[HF_TOKEN]"]).cell
    command = server_command(cell, "/m", 8000)
    at = command.argv.index("HF_TOKEN")
    assert command.argv[at - 1] == "-e" and command.forward_env == ("HF_TOKEN",)
    assert not any(part.startswith("HF_TOKEN=") for part in command.argv)


V0_30_0 = "ced6857afa0ea7b2e3f0846a62e1394e90f15607"  # vLLM v0.30.0 (`git describe --tags --exact-match`)
OTHER = "27e0057aeda6bc443069c20fdf2f3cc95ed892f3"  # the merge of vLLM PR 41745 (Gemma 4 MTP)


def test_the_default_spark_build_is_pinned_and_named_its_own() -> None:
    image = compose_cell(SPARK).cell.image
    # v0.30.0 has Gemma 4 MTP (PR 41745) and adaptive verification (PRs 47808, 52228); DFlash's PR 41703 is applied.
    assert (image.vllm_ref, image.rebuild_vllm, image.apply_vllm_prs) == (V0_30_0, True, [41703])
    # build-and-copy.sh usage(): -t <tag>, --rebuild-vllm, --vllm-ref <ref>, --apply-vllm-pr <pr-num> (repeatable)
    assert build_argv(image) == ["./build-and-copy.sh", "-t", f"specsweep-spark-vllm:{spec_key(image)}", "--rebuild-vllm",
                                 "--vllm-ref", V0_30_0, "--apply-vllm-pr", "41703"]  # fmt: skip
    assert built_tag(image).split(":")[0] != "vllm-node"  # the users' own image is never overwritten


def test_a_vllm_ref_that_can_move_is_refused_at_config_time() -> None:
    for ref, shown in (("main", "'main'"), ("v0.30.0", "'v0.30.0'"), ("null", "None"), ("ced6857", "'ced6857'")):
        with pytest.raises(ConfigError, match=rf"image.vllm_ref={shown} is not a vLLM commit sha.*git ls-remote"):
            compose_cell([*SPARK, f"image.vllm_ref={ref}"])


def test_the_spec_keys_the_build_and_names_its_tag() -> None:
    base = compose_cell(SPARK).cell.image
    assert spec_key(base) == spec_key(compose_cell([*SPARK, "image.tag=my-vllm"]).cell.image)
    for change in ("image.rebuild_vllm=false", "image.apply_vllm_prs=[41745]", f"image.vllm_ref={OTHER}",
                   "image.build_ref=0000000000000000000000000000000000000000"):  # fmt: skip
        changed = compose_cell([*SPARK, change]).cell.image
        assert spec_key(changed) != spec_key(base) and built_tag(changed) != built_tag(base), change


def test_an_image_built_from_another_ref_or_without_the_prs_is_refused() -> None:
    image = compose_cell(SPARK).cell.image
    built = {"build_args": {"vllm_ref": V0_30_0, "vllm_prs": "41703"}}
    check_built_spec(image, built, [41703], "sha256:" + "a" * 64)
    with pytest.raises(EngineError, match=rf"built from vLLM ref main, not image.vllm_ref={V0_30_0}.*docker rmi"):
        check_built_spec(image, {"build_args": {"vllm_ref": "main"}}, [41703], "sha256:" + "a" * 64)
    with pytest.raises(EngineError, match=r"lacks vLLM PR\(s\) \[41703\].*applied none"):
        check_built_spec(image, built, [], "sha256:" + "a" * 64)
    with pytest.raises(EngineError, match=r"built from vLLM ref \(none recorded\)"):
        check_built_spec(image, {}, [41703], "sha256:" + "a" * 64)


def test_a_branch_as_build_ref_is_refused_with_the_fix() -> None:
    kind = backend_of(compose_cell([*SPARK, "image.build_ref=main"]).cell.image)
    with pytest.raises(EngineError, match="not a commit sha.*pin a commit"):
        kind._built_id()


def test_build_metadata_gives_commit_and_prs() -> None:
    # The shape build-and-copy.sh's generate_build_metadata writes into /workspace/build-metadata.yaml.
    text = """build_date: 2026-06-01T12:00:00Z
build_script_commit: 9240d66aec7e9db659322f346b16fa512cf7f102
vllm_version: 0.21.1.dev12+g1234abcd
vllm_commit: 1234abcd5678ef901234abcd5678ef901234abcd
flashinfer_commit: unknown
gpu_arch: 12.1a
base_image: nvidia/cuda:13.0.2-devel-ubuntu24.04
build_args:
  vllm_ref: main
  transformers_5: true
  exp_mxfp4: false
  vllm_prs: "41745 https://github.com/vllm-project/vllm/pull/42180"
  build_jobs: 16
"""
    metadata, commit, prs = parse_build_metadata(text)
    assert commit == "1234abcd5678ef901234abcd5678ef901234abcd" and prs == [41745, 42180]
    assert metadata["build_args"]["vllm_ref"] == "main"
    assert parse_build_metadata("vllm_commit: unknown\n")[1:] == (None, [])
    assert parse_build_metadata("")[1:] == (None, [])


def test_needs_of_the_users_spark_cells() -> None:
    cells = [compose_cell([*SPARK, "drafter=gemma_mtp", f"k={k}"]).cell for k in (1, 7)]
    cells.append(compose_cell([*SPARK, "drafter=dflash", "k=15"]).cell)
    needs = needs_of(cells)
    assert needs.methods == ["dflash", "mtp"]
    assert needs.architectures == {"Gemma4MTPModel": 41745}
    assert needs.load_formats == ["instanttensor"] and needs.kv_cache_dtypes == ["fp8_e4m3"]
    assert needs.tool_parsers == ["gemma4"] and needs.reasoning_parsers == ["gemma4"]
    # What the Gemma 4 DFlash card asks: PR 41703 applied, triton_attn on the target, flash_attn for the draft.
    assert needs.prs == {41703: ["dflash"]} and needs.attention_backends == ["flash_attn", "triton_attn"]
    assert needs_of(cells[:2]).prs == {} and needs_of(cells[:2]).attention_backends == []


def test_dflash_cells_render_the_target_backend_its_card_asks_for() -> None:
    cell = compose_cell([*SPARK, "drafter=dflash", "k=15"]).cell
    argv = server_command(cell, "/m", 8000).argv
    assert argv[argv.index("--attention-backend") + 1] == "triton_attn"
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec == {"method": "dflash", "model": "z-lab/gemma-4-31B-it-DFlash", "num_speculative_tokens": 15,
                    "attention_backend": "flash_attn"}  # fmt: skip
    assert "--attention-backend" not in server_command(compose_cell([*SPARK, "drafter=gemma_mtp", "k=2"]).cell, "/m", 8000).argv


def test_preflight_refuses_dflash_on_an_image_without_its_pr_or_backend() -> None:
    cells = [compose_cell([*SPARK, "drafter=dflash", "k=15"]).cell]
    found = {"methods": ["dflash"], "architectures": [], "load_formats": ["instanttensor"], "kv_cache_dtypes": ["fp8_e4m3"],
             "tool_parsers": ["gemma4"], "reasoning_parsers": ["gemma4"], "packages": {"instanttensor": True},
             "attention_backends": ["FLASH_ATTN", "TRITON_ATTN"]}  # fmt: skip
    spark = backend_of(compose_cell(SPARK).cell.image)
    assert compare(needs_of(cells), found, spark, [41703]) == []
    problems = {p.need: p for p in compare(needs_of(cells), {**found, "attention_backends": ["FLASH_ATTN"]}, spark, [])}
    assert set(problems) == {"pr:41703", "attention_backend:triton_attn"}
    assert "drafter dflash needs vLLM PR 41703" in problems["pr:41703"].message
    assert problems["pr:41703"].fix.startswith("add image.apply_vllm_prs=[41703]")


def test_an_image_older_than_gemma4_mtp_gets_the_pr_as_the_fix() -> None:
    needs = Needs(methods=["mtp"], architectures={"Gemma4MTPModel": 41745}, load_formats=["instanttensor"])
    found = {"methods": ["mtp", "ngram"], "architectures": ["Gemma3ForCausalLM"], "load_formats": ["auto"],
             "kv_cache_dtypes": [], "tool_parsers": [], "reasoning_parsers": [], "packages": {"instanttensor": True}}  # fmt: skip
    spark = backend_of(compose_cell(SPARK).cell.image)
    problems = {p.need: p for p in compare(needs, found, spark)}
    assert set(problems) == {"architecture:Gemma4MTPModel", "load_format:instanttensor"}
    assert problems["architecture:Gemma4MTPModel"].fix.startswith("add image.apply_vllm_prs=[41745]")
    assert "image.rebuild_vllm=true" in problems["load_format:instanttensor"].fix
    cpu = backend_of(compose_cell(["image=vllm_cpu"]).cell.image)
    assert "image.requirements" in compare(needs, found, cpu)[0].fix


def test_dflash_runs_at_the_k_of_its_trained_block_only() -> None:
    with pytest.raises(Exception, match=r"drafts k in \[15\] only .* set k=15"):
        compose_cell([*SPARK, "drafter=dflash", "k=8"])


def test_a_prepared_drafter_and_model_are_served_from_their_snapshots(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cell = compose_cell([*SPARK, "quant=ebircak_nvfp4a16_gptq", "drafter=gemma_mtp", "k=3"]).cell
    snapshots = tmp_path / "hf/hub"
    model = str(snapshots / "models--ebircak--gemma-4-31B-it-4bit-NVFP4A16-GPTQ/snapshots/c0ffee")
    drafter = str(snapshots / "models--google--gemma-4-31B-it-assistant/snapshots/beef")
    from specsweep.images.base import LaunchSpec

    kind = backend_of(cell.image)
    spec = LaunchSpec(cell=cell, model_location=model, port=8000, name="c", dtype=None, env={}, labels={},
                      drafter_location=drafter)  # fmt: skip
    argv = kind.server_command(kind.preview(), spec).argv
    served = argv.index("serve") + 1
    # Both at their host paths: HF_HOME is mounted at itself.
    assert argv[served] == model and f"{tmp_path / 'hf'}:{tmp_path / 'hf'}" in argv
    assert "--revision" not in argv  # the snapshot is the pinned commit
    assert f'"model":"{drafter}"' in argv[argv.index("--speculative-config") + 1]


def test_the_quantizer_venv_takes_the_tools_pins_but_the_images_torch() -> None:
    from specsweep.config.schema import QuantizerCfg
    from specsweep.quantize.in_image import tools_key, tools_requirements

    quantizer = compose_cell(SPARK).cell.image.quantizer
    assert quantizer.where == "image"
    pins = tools_requirements(quantizer)
    names = {pin.split("==")[0] for pin in pins}
    assert {"llmcompressor", "auto-round", "compressed-tensors", "transformers"} <= names
    assert "torch" not in names and "compressed-tensors==0.19.0" in pins
    assert "nvidia-ml-py" in names
    assert "nvidia-ml-py" not in {p.split("==")[0] for p in tools_requirements(QuantizerCfg(from_image=["torch", "nvidia-*"]))}
    # Keyed by the serving image and the pins: another image or other pins are another tools image.
    assert tools_key("sha256:a", quantizer) == tools_key("sha256:a", quantizer) != tools_key("sha256:b", quantizer)
    assert tools_key("sha256:a", QuantizerCfg(where="image", from_image=["torch", "nvidia-*"])) != tools_key("sha256:a", quantizer)


def test_the_quantize_container_gets_the_launchers_flags_labels_and_each_path_at_itself(monkeypatch, tmp_path: Path) -> None:
    from specsweep.images.base import backend_of
    from specsweep.quantize.in_image import TOOLS_PYTHON

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SPECSWEEP_RUN_OWNER", "123:4.00")
    image = compose_cell(SPARK).cell.image
    snapshot = str(tmp_path / "hf/hub/models--google--gemma-4-31B-it/snapshots/abc")
    job = [TOOLS_PYTHON, "/p/job.py", "/c/x.spec.json"]
    argv = backend_of(image).job_command("sha256:tools", "specsweep-quantize-x", "quantize/specsweep-quantize-x", job,
                                         [snapshot, "/p/data/calibration/c.txt", *job[1:]], ["/c/quants"])  # fmt: skip
    assert argv[:4] == ["docker", "run", "--name", "specsweep-quantize-x"]
    flags = " ".join(argv)
    # launch-cluster.sh's GPU, IPC and allocator settings, as for a server of this image.
    assert "--gpus all" in flags and "--ipc=host" in flags and "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in flags
    assert "--label specsweep.owner=123:4.00" in flags and "--label specsweep.cell=quantize/specsweep-quantize-x" in flags
    assert "-v /c/quants:/c/quants " in flags and "-v /p/data/calibration/c.txt:/p/data/calibration/c.txt:ro" in flags
    assert "-v /p/job.py:/p/job.py:ro" in flags and "-v /c/x.spec.json:/c/x.spec.json:ro" in flags
    # The snapshot is under HF_HOME, which the launcher mounts at its own path (its links stay inside).
    assert f"{snapshot}:" not in flags and f"-v {tmp_path / 'hf'}:{tmp_path / 'hf'} -e HF_HOME={tmp_path / 'hf'}" in flags
    assert argv[-4:] == ["sha256:tools", TOOLS_PYTHON, "/p/job.py", "/c/x.spec.json"]


def test_an_in_image_quant_is_keyed_without_building_the_tools_image() -> None:
    """A Spark sweep whose checkpoints are cached must not build (or even look for) the tools image."""
    from specsweep.quantize.in_image import tools_key
    from specsweep.quantize.run import HostQuantizer, ImageQuantizer, quantizer_for
    from specsweep.records.image import ImageRecord

    image = compose_cell(SPARK).cell.image
    record = ImageRecord.model_construct(name=image.name, location="sha256:" + "ab" * 32)
    quantizer = quantizer_for((image, record))
    assert isinstance(quantizer, ImageQuantizer) and quantizer.image_id is None
    assert quantizer.identity == f"image:{tools_key(record.location, image.quantizer)}"
    assert quantizer.name.endswith(f"specsweep/quantize-tools:{tools_key(record.location, image.quantizer)}")
    cpu = compose_cell(["image=vllm_cpu_docker"]).cell.image
    assert cpu.quantizer.where == "model_tools"
    assert type(quantizer_for((cpu, record))) is HostQuantizer and type(quantizer_for(None)) is HostQuantizer


ADAPTIVE = [*SPARK, "model=gemma4_26b_a4b_it", "quant=nvidia_nvfp4_26b_a4b", "drafter=gemma_mtp_26b_a4b", "k=4",
            "adaptive_verification=true"]  # fmt: skip


def test_adaptive_verification_is_a_cell_axis_rendered_into_the_speculative_config(tmp_path: Path) -> None:
    from specsweep.cell import plan_launch
    from specsweep.images.base import MODEL_RUNNER_V2_ENV

    cell = compose_cell(ADAPTIVE).cell
    argv = server_command(cell, "/m", 8000).argv
    spec = json.loads(argv[argv.index("--speculative-config") + 1])
    assert spec["enable_adaptive_verification"] is True and spec["num_speculative_tokens"] == 4
    kind = backend_of(cell.image)
    launch = plan_launch(cell, "/m", kind.preview(), "s", "c", tmp_path)
    # Model Runner V1 refuses adaptive verification: the container gets V2.
    assert launch.spec.env[MODEL_RUNNER_V2_ENV] == "1" and f"{MODEL_RUNNER_V2_ENV}=1" in launch.command.argv
    fixed = plan_launch(compose_cell(ADAPTIVE[:-1]).cell, "/m", kind.preview(), "s", "c", tmp_path)
    assert MODEL_RUNNER_V2_ENV not in fixed.spec.env
    with pytest.raises(ConfigError, match="vLLM verifies adaptively for mtp, dflash, eagle3, draft_model, suffix drafters only"):
        compose_cell(["drafter=ngram", "adaptive_verification=true"])


def test_adaptive_cells_are_skipped_on_cpu_images_and_checked_by_preflight_elsewhere() -> None:
    from specsweep.images.base import unsupported_reason
    from specsweep.records.host import read_cpu_facts

    cpu_cell = compose_cell(["drafter=suffix", "adaptive_verification=true"]).cell
    cpu_image = backend_of(cpu_cell.image).preview().model_copy(update={"host_cpu": read_cpu_facts()})
    reason = unsupported_reason(cpu_cell, cpu_image)
    assert reason is not None and "needs full CUDA graphs" in reason and "serves on the CPU" in reason
    assert unsupported_reason(compose_cell(["drafter=suffix"]).cell, cpu_image) is None
    needs = needs_of([compose_cell(ADAPTIVE).cell])
    assert needs.adaptive_verification
    found = {"methods": ["mtp"], "architectures": ["Gemma4MTPModel"], "load_formats": ["instanttensor"],
             "kv_cache_dtypes": ["fp8_e4m3"], "tool_parsers": ["gemma4"], "reasoning_parsers": ["gemma4"],
             "packages": {"instanttensor": True}, "speculative_fields": ["method", "num_speculative_tokens"]}  # fmt: skip
    spark = backend_of(compose_cell(SPARK).cell.image)
    problems = {p.need: p for p in compare(needs, found, spark)}
    assert set(problems) == {"speculative:enable_adaptive_verification"}
    assert "v0.30.0" in problems["speculative:enable_adaptive_verification"].message
    found["speculative_fields"].append("enable_adaptive_verification")
    assert compare(needs, found, spark) == []


def test_preflight_argvs_carry_the_project_files_they_name() -> None:
    """A probe's container mounts nothing: the chat template an argv names travels as text under a placeholder path
    (vLLM checks that the template exists)."""
    from specsweep.images.preflight import planned_argvs

    planned = planned_argvs([compose_cell([]).cell], ["c"])
    argv = planned.argvs["c"]
    at = argv.index("--chat-template") + 1
    assert argv[0] == "/specsweep/preflight/model" and argv[at] == "/specsweep/preflight/files/gemma3.jinja"
    assert planned.files == {argv[at]: (ROOT / "data/chat_templates/gemma3.jinja").read_text()}
