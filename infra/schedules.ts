import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface SchedulesProps {
  readonly scrubPlanner: lambda.IFunction;
  readonly cleanup: lambda.IFunction;
  readonly retention: lambda.IFunction;
  /** When set, every schedule runs at `rate(N minutes)` (test stacks). */
  readonly rateMinutes: number | undefined;
}

/**
 * The periodic work, as EventBridge rules: a daily scrub, an hourly cleanup
 * and a daily retention run. Rules (rather than EventBridge Scheduler) need no
 * extra IAM role, and both AWS and the MiniStack emulator fire them.
 */
export class Schedules extends Construct {
  readonly scrub: events.Rule;
  readonly cleanup: events.Rule;
  readonly retention: events.Rule;

  constructor(scope: Construct, id: string, props: SchedulesProps) {
    super(scope, id);
    const every = (production: events.Schedule): events.Schedule =>
      props.rateMinutes === undefined ? production : events.Schedule.expression(`rate(${props.rateMinutes} minute${props.rateMinutes === 1 ? '' : 's'})`);
    const event = (task: string): events.RuleTargetInput => events.RuleTargetInput.fromObject({ source: 'backy2.schedule', task });

    this.scrub = new events.Rule(this, 'DailyScrub', {
      description: 'backy2: plan a scrub of the blocks of recent versions',
      schedule: every(events.Schedule.cron({ minute: '17', hour: '3' })),
    });
    this.scrub.addTarget(new targets.LambdaFunction(props.scrubPlanner, { event: event('scrub'), retryAttempts: 2 }));

    this.cleanup = new events.Rule(this, 'HourlyCleanup', {
      description: 'backy2: mark unreferenced blocks and delete those past the grace period',
      schedule: every(events.Schedule.cron({ minute: '41' })),
    });
    this.cleanup.addTarget(new targets.LambdaFunction(props.cleanup, { event: event('cleanup'), retryAttempts: 2 }));

    this.retention = new events.Rule(this, 'DailyRetention', {
      description: 'backy2: remove expired, unprotected versions and fail stale backups',
      schedule: every(events.Schedule.cron({ minute: '7', hour: '2' })),
    });
    this.retention.addTarget(new targets.LambdaFunction(props.retention, { event: event('retention'), retryAttempts: 2 }));
  }
}
