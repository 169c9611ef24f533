"""The AWS dialect: STS and Secrets Manager under ``PUBLIC_URL/aws`` (docs/aws.md).

- ``sts``: ``AssumeRoleWithWebIdentity`` and ``GetCallerIdentity`` (query protocol, XML);
- ``auth``: the caller of a SigV4-signed request (session credentials, ``core/awssession.py``);
- ``wire``: AWS's XML answers and error bodies, and keyless's errors mapped to AWS's codes.
"""
