#!/usr/bin/env python3
"""A credential program for the tests, as IAM Roles Anywhere's signing helper behaves.

  credproc.py STS_ENDPOINT LOG [--lifetime SECONDS] [--fail] [--garbage SECRET] [--sleep SECONDS]

Asks the local server's STS for temporary credentials (AssumeRole: moto gives each call
its own key, where GetSessionToken always gives the same one), appends their
AccessKeyId to LOG (one line per run), and prints the AWS JSON credential document with an
Expiration SECONDS from now (default 3600). --fail writes an error to stderr and exits 2;
--garbage prints a broken document holding SECRET. --sleep takes that long first (a
slow signing helper).
"""

import datetime
import json
import sys

import boto3


def main():
    endpoint, log = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    if "--sleep" in args:
        import time

        time.sleep(float(args[args.index("--sleep") + 1]))
    with open(log, "a") as f:
        if "--fail" in args:
            f.write("failed\n")
            print("signing helper: certificate expired", file=sys.stderr)
            sys.exit(2)
        if "--garbage" in args:
            f.write("garbage\n")
            secret = args[args.index("--garbage") + 1]
            print('{"Version": 1, "AccessKeyId": "ASIAGARBAGE", "SecretAccessKey": "%s"' % secret)
            return
        lifetime = int(args[args.index("--lifetime") + 1]) if "--lifetime" in args else 3600
        sts = boto3.client(
            "sts",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIAPROCESSBASE",
            aws_secret_access_key="process-base-secret",
        )
        c = sts.assume_role(
            RoleArn="arn:aws:iam::123456789012:role/roles-anywhere",
            RoleSessionName="credproc",
        )["Credentials"]
        f.write(c["AccessKeyId"] + "\n")
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
    print(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": c["AccessKeyId"],
                "SecretAccessKey": c["SecretAccessKey"],
                "SessionToken": c["SessionToken"],
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    )


if __name__ == "__main__":
    main()
