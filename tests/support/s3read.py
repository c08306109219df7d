#!/usr/bin/env python3
"""Independent reader for the integration tests: boto3 against the test S3 server.

usage: s3read.py ENDPOINT COMMAND ARGS...
  mb BUCKET                 create a bucket (no error if it exists)
  ls BUCKET                 one line per object: size and key
  dump BUCKET               JSON {key: {"size", "sha256", "etag", "meta_sha256"}}
  uploads BUCKET            JSON list of open multipart uploads [{key, upload_id}]
  describe BUCKET KEY       JSON: tags, metadata, storage class, SSE, content type, ACL grants
  abort-all BUCKET          abort every open multipart upload (as a lifecycle rule would)
  iam-user BUCKET NAME [ACTION...]
                            create an IAM user, allowed ACTIONs (e.g. s3:GetObject) on the
                            bucket and its objects, or nothing; JSON {access_key_id, secret}
  put BUCKET KEY PATH       write PATH's bytes under KEY, as another writer would
  rm BUCKET KEY             delete one object
  auth-on BUCKET            make moto check signatures, keys and IAM policies from now on
  get BUCKET KEY PATH       save one object's bytes to PATH
  save BUCKET DIR PREFIX     save every object under PREFIX to DIR/N.gpg; JSON {key: path}
  versioning BUCKET         turn on versioning: every write keeps a version of its own
  versions BUCKET           JSON {key: [{"version_id", "size", "etag", "meta"}]}, oldest
                            first: a second identical PUT shows as a second version
  table BUCKET KEY [--summary]
                            read a Parquet (pyarrow) or JSON-lines (json) object: JSON
                            {rows, row_groups, columns: [{name, type, nullable}], values};
                            --summary: no values, only the first and last row
"""
import datetime
import gzip
import hashlib
import json
import sys
import urllib.request

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    s3 = client(endpoint)
    if command == "mb":
        try:
            s3.create_bucket(Bucket=args[0])
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        print("{}")
    elif command == "ls":
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args[0]):
            for obj in page.get("Contents", []):
                print(f"{obj['Size']:>12}  {obj['Key']}")
    elif command == "dump":
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args[0]):
            for obj in page.get("Contents", []):
                got = s3.get_object(Bucket=args[0], Key=obj["Key"])
                body = got["Body"].read()
                out[obj["Key"]] = {
                    "size": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "etag": obj["ETag"].strip('"'),
                    "meta_sha256": got.get("Metadata", {}).get("sha256"),
                    "meta_source_sha256": got.get("Metadata", {}).get("source-sha256"),
                    "meta_source_tag": got.get("Metadata", {}).get("source-tag"),
                    "content_type": got.get("ContentType"),
                    # Read back with the standard library, independent of s3spool.
                    "gunzip_sha256": hashlib.sha256(gzip.decompress(body)).hexdigest()
                    if body[:2] == b"\x1f\x8b"
                    else None,
                }
        print(json.dumps(out))
    elif command == "uploads":
        found = s3.list_multipart_uploads(Bucket=args[0]).get("Uploads", [])
        print(json.dumps([{"key": u["Key"], "upload_id": u["UploadId"]} for u in found]))
    elif command == "describe":
        key = args[1]
        head = s3.head_object(Bucket=args[0], Key=key)
        tags = s3.get_object_tagging(Bucket=args[0], Key=key).get("TagSet", [])
        acl = s3.get_object_acl(Bucket=args[0], Key=key)
        print(json.dumps({
            "tags": {t["Key"]: t["Value"] for t in tags},
            "metadata": head.get("Metadata", {}),
            "storage_class": head.get("StorageClass", "STANDARD"),
            "sse": head.get("ServerSideEncryption"),
            "content_type": head.get("ContentType"),
            "grants": sorted(g["Permission"] + ":" + g["Grantee"].get("Type", "") for g in acl.get("Grants", [])),
        }))
    elif command == "abort-all":
        found = s3.list_multipart_uploads(Bucket=args[0]).get("Uploads", [])
        for u in found:
            s3.abort_multipart_upload(Bucket=args[0], Key=u["Key"], UploadId=u["UploadId"])
        print(json.dumps(len(found)))
    elif command == "iam-user":
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        name, actions = args[1], args[2:]
        iam.create_user(UserName=name)
        if actions:
            policy = {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": actions,
                    "Resource": [f"arn:aws:s3:::{args[0]}", f"arn:aws:s3:::{args[0]}/*"],
                }],
            }
            iam.put_user_policy(
                UserName=name, PolicyName="test", PolicyDocument=json.dumps(policy)
            )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        print(json.dumps({"access_key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
    elif command == "auth-on":
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        urllib.request.urlopen(request).read()
        print("{}")
    elif command == "put":
        with open(args[2], "rb") as f:
            s3.put_object(Bucket=args[0], Key=args[1], Body=f.read())
        print("{}")
    elif command == "rm":
        s3.delete_object(Bucket=args[0], Key=args[1])
        print("{}")
    elif command == "get":
        body = s3.get_object(Bucket=args[0], Key=args[1])["Body"].read()
        with open(args[2], "wb") as f:
            f.write(body)
        print("{}")
    elif command == "save":
        import os

        out, n = {}, 0
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=args[2])
        for page in pages:
            for obj in page.get("Contents", []):
                n += 1
                path = os.path.join(args[1], f"{n}.gpg")
                with open(path, "wb") as f:
                    f.write(s3.get_object(Bucket=args[0], Key=obj["Key"])["Body"].read())
                out[obj["Key"]] = path
        print(json.dumps(out))
    elif command == "versioning":
        s3.put_bucket_versioning(
            Bucket=args[0], VersioningConfiguration={"Status": "Enabled"}
        )
        print("{}")
    elif command == "versions":
        out = {}
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=args[0])
        for page in pages:
            for v in page.get("Versions", []):
                head = s3.head_object(Bucket=args[0], Key=v["Key"], VersionId=v["VersionId"])
                out.setdefault(v["Key"], []).append({
                    "version_id": v["VersionId"],
                    "size": v["Size"],
                    "etag": v["ETag"].strip('"'),
                    "modified": v["LastModified"].isoformat(),
                    "meta": head.get("Metadata", {}),
                })
        for versions in out.values():
            versions.sort(key=lambda v: v["modified"])
        print(json.dumps(out))
    elif command == "table":
        import tempfile

        body = s3.get_object(Bucket=args[0], Key=args[1])["Body"].read()
        with tempfile.NamedTemporaryFile() as f:
            f.write(body)
            f.flush()
            table = read_table(f.name)
            if args[2:] == ["--summary"]:
                values = table.pop("values")
                table["first"], table["last"] = values[0], values[-1]
            print(json.dumps(table, default=plain))
    else:
        sys.exit(f"unknown command {command}")


def plain(value):
    """JSON for what pyarrow hands back: dates and times in ISO 8601."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise TypeError(f"cannot show {type(value)}")


def read_table(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        table = parquet.read()
        return {
            "rows": table.num_rows,
            "row_groups": parquet.num_row_groups,
            "columns": [
                {"name": f.name, "type": str(f.type), "nullable": f.nullable}
                for f in table.schema
            ],
            "values": table.to_pylist(),
        }
    with open(path, encoding="utf-8") as f:
        values = [json.loads(line) for line in f]
    return {"rows": len(values), "values": values}


if __name__ == "__main__":
    main()
