"""What deploy/README.md tells an operator to run is safe to run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "deploy" / "README.md").read_text()


def shell_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


def test_the_webserver_is_bound_to_loopback_behind_an_authenticating_proxy():
    servers = [line for line in shell_lines() if "dagster-webserver" in line]
    assert servers and all("-h 127.0.0.1" in line for line in servers), servers
    assert "0.0.0.0" not in README
    assert "auth_basic" in README and "proxy_pass http://127.0.0.1:3000" in README


def test_redis_urls_carry_a_password_and_tls():
    urls = re.findall(r"DAGSTER_CELERY_\w+_URL=\"?(\S+?)\"?$", "\n".join(shell_lines()), re.M)
    assert urls
    for url in urls:
        assert url.startswith("rediss://:${REDIS_PASSWORD}@"), url
        assert "ssl_cert_reqs=required" in url, url


def test_postgresql_is_reached_over_verified_tls():
    assert any("PGSSLMODE=verify-full" in line for line in shell_lines())
