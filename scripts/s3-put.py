#!/usr/bin/env python3
"""Uploads files to the project's S3 test server (moto, keys minioadmin): the bucket is created
when missing, and each FILE under DIR goes to PREFIX/its path under DIR (every file when no FILE
is named; an empty PREFIX: at the bucket's root). Used by the benchmark and screenshot scripts.

    scripts/s3-put.py ENDPOINT BUCKET DIR PREFIX [FILE ...]
"""
import os
import sys

import boto3

endpoint, bucket, root, prefix, *names = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="minioadmin", aws_secret_access_key="minioadmin123")
if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=bucket)
if names:
    paths = [os.path.join(root, n) for n in names if os.path.exists(os.path.join(root, n))]
else:
    paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
for path in sorted(paths):
    key = os.path.relpath(path, root)
    s3.upload_file(path, bucket, f"{prefix}/{key}" if prefix else key)
