"""Code examples in the docs run as written (a fresh interpreter each, so their registrations stay there)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _block_after(doc: str, marker: str) -> str:
    text = (ROOT / "docs" / doc).read_text()
    start = text.index(marker)
    return text[start:text.index("```", start)]


def test_environment_plugin_example_imports_and_its_tools_run(tmp_path):
    (tmp_path / "word_env.py").write_text(_block_after("environments.md", "# my_project/word_env.py"))
    check = ("from rlvr.environments import load_environment_plugins, get_environment\n"
             "from rlvr.environments.registry import get_tool\n"
             "load_environment_plugins(['word_env.py'])\n"
             "import sys; m = [v for k, v in sys.modules.items() if k.startswith('rlvr_plugin_word_env')][0]\n"
             "assert m.lookup('Cat') == 'a small domesticated feline', m.lookup('Cat')\n"
             "get_environment('dictionary'); get_environment('hangman', max_guesses=3)\n"
             "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
