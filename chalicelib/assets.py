"""Lead-magnet assets in the campaign's private S3 bucket, handed out as expiring links."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3AssetLinks:
    def __init__(self, client: Callable[[], S3Client], bucket: str) -> None:
        # The client is made on the first link: creating it loads S3's service model (tens of ms),
        # which cold starts that hand out no lead magnet (most of them) never need.
        self._make_client = client
        self._bucket = bucket

    @property
    def _client(self) -> S3Client:
        return self._make_client()

    def download_url(self, asset_key: str, lifetime_seconds: int) -> str:
        # Presigning is local computation: no request to S3, nothing to fail at submit time.
        filename = PurePosixPath(asset_key).name
        return self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": asset_key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=lifetime_seconds,
        )
