import { hostname } from 'node:os';
import { z } from 'zod';
import { nonEmpty } from '../fields.js';

export const agentSection = z
  .strictObject({
    node_name: nonEmpty().default(() => hostname()),
    state_dir: nonEmpty().default('./var'),
  })
  .prefault({});

// node_name: log lines keep the name the agent started with (/status and OTLP follow a reload).
export const agentRestartRequired = ['agent.state_dir', 'agent.node_name'];
