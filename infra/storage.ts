import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface StorageProps {
  readonly retain: boolean;
  /** Use this existing bucket (its blocks, manifests, key ring and journal stay) instead of creating one. */
  readonly existingBucket?: string | undefined;
}

/**
 * Where backups live: the block bucket (encrypted blocks under `blocks/ab/cd/<id>`,
 * encrypted version manifests under `manifests/<uid>`), the event log
 * (one stream per version, `stream` + `seq`, appended with optimistic
 * concurrency) and the projections rebuilt from it (`pk` + `sk`).
 */
export class Storage extends Construct {
  readonly bucket: s3.IBucket;
  /** False when the stack was deployed onto an existing bucket. */
  readonly ownsBucket: boolean;
  readonly eventsTable: dynamodb.Table;
  readonly projectionsTable: dynamodb.Table;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    const removalPolicy = props.retain ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    this.ownsBucket = !props.existingBucket;
    this.bucket = props.existingBucket
      ? s3.Bucket.fromBucketName(this, 'Bucket', props.existingBucket)
      : new s3.Bucket(this, 'Bucket', {
          blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
          enforceSSL: true,
          encryption: s3.BucketEncryption.S3_MANAGED,
          objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
          versioned: false,
          lifecycleRules: [{ id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) }],
          removalPolicy,
          // A destroyable (test) stack must be able to delete a bucket that still holds objects.
          autoDeleteObjects: false,
        });

    this.eventsTable = new dynamodb.Table(this, 'EventsTable', {
      partitionKey: { name: 'stream', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'seq', type: dynamodb.AttributeType.NUMBER },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      deletionProtection: props.retain,
      removalPolicy,
    });

    this.projectionsTable = new dynamodb.Table(this, 'ProjectionsTable', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      deletionProtection: props.retain,
      removalPolicy,
    });
  }
}
