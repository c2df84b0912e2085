#!/usr/bin/env bash
# The two IAM roles of cluster/aws.yaml, each with an instance profile of the same name:
#   seq2seq-ray-head    the head: launch/stop/terminate workers (EC2), hand them their role
#                       (iam:PassRole on seq2seq-ray-worker only), read/write the run's bucket
#   seq2seq-ray-worker  the GPU workers: read/write the run's bucket, nothing else
# Ray's own default head role (ray-autoscaler-v1: EC2 and S3 full access, no iam:PassRole) is then
# not created or used: a head whose node_config names an IamInstanceProfile keeps it.
#
#   bash cluster/aws-iam/create.sh YOUR_BUCKET
#
# Needs credentials that may create IAM roles. Safe to run again (it updates the policies).
set -euo pipefail
bucket=${1:?usage: $0 BUCKET (the bucket of storage_path and the corpus, without s3://)}
here=$(cd "$(dirname "$0")" && pwd)
account=$(aws sts get-caller-identity --query Account --output text)

policy() {  # the policy file with this account and bucket filled in
  sed -e "s/YOUR_ACCOUNT_ID/$account/g" -e "s/YOUR_BUCKET/$bucket/g" "$here/$1"
}

for role in seq2seq-ray-head seq2seq-ray-worker; do
  if ! aws iam get-role --role-name "$role" > /dev/null 2>&1; then
    aws iam create-role --role-name "$role" \
      --assume-role-policy-document "file://$here/ec2-trust.json" > /dev/null
  fi
  kind=${role#seq2seq-ray-}
  aws iam put-role-policy --role-name "$role" --policy-name "$role" \
    --policy-document "$(policy "$kind-policy.json")"
  if ! aws iam get-instance-profile --instance-profile-name "$role" > /dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "$role" > /dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
  fi
  echo "arn:aws:iam::$account:instance-profile/$role"
done
