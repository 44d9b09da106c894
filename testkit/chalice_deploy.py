"""TEST HELPER, not part of the app: ``chalice deploy --stage S`` run in this process, its packaging
stubbed to hand every function one zip built beforehand.

The real ``chalice deploy`` builds the Lambda zip with pip (manylinux wheels from PyPI): slow and
online. What the team-deploy test checks is what Chalice creates, updates and records in AWS, so
only the packaging step is replaced (``LambdaDeploymentPackager.create_deployment_package``); the
rest is Chalice's own deployer (planner, executor, recorder) against whatever endpoint botocore is
pointed at (``AWS_ENDPOINT_URL``: the test's moto server). ``fail_on`` makes the creation of one
function fail, as a deploy that stops halfway does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional
from unittest import mock

from chalice.awsclient import TypedAWSClient
from chalice.cli.factory import CLIFactory
from chalice.deploy.deployer import ChaliceDeploymentError
from chalice.deploy.packager import LambdaDeploymentPackager
from chalice.utils import UI


class InjectedFailure(Exception):
    """The failure ``fail_on`` makes a function's creation raise."""


def chalice_deploy(stage: str, project_dir: Path, package: Path, fail_on: Optional[str] = None) -> int:
    """Chalice's deploy of ``stage`` from ``project_dir``; its exit code (1 when it failed, as the CLI)."""
    original_create = TypedAWSClient.create_function

    def create_function(self: TypedAWSClient, *args: Any, **kwargs: Any) -> str:
        if fail_on is not None and kwargs.get("function_name") == fail_on:
            raise InjectedFailure(f"injected: the creation of {fail_on} fails")
        return str(original_create(self, *args, **kwargs))

    # Chalice imports the project's app.py with the stage's environment variables put into
    # os.environ (the CLI hands its factory os.environ itself): each clone's own app.py, and the
    # process's environment as it was afterwards.
    sys.modules.pop("app", None)
    with (
        mock.patch.dict(os.environ),
        mock.patch.object(sys, "path", list(sys.path)),
        mock.patch.object(LambdaDeploymentPackager, "create_deployment_package", lambda *a: str(package)),
        mock.patch.object(TypedAWSClient, "create_function", create_function),
    ):
        factory = CLIFactory(str(project_dir), environ=os.environ)
        config = factory.create_config_obj(chalice_stage_name=stage)
        session = factory.create_botocore_session()
        deployer = factory.create_default_deployer(session=session, config=config, ui=UI())
        try:
            deployer.deploy(config, chalice_stage_name=stage)
        except (ChaliceDeploymentError, InjectedFailure) as e:
            print(f"chalice deploy failed: {e}", file=sys.stderr)
            return 1
        finally:
            sys.modules.pop("app", None)
    return 0
