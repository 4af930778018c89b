import { hostname } from 'node:os';
import { z } from 'zod';
import { nonEmpty } from '../fields.js';

export const agentSection = z
  .strictObject({
    node_name: nonEmpty().default(() => hostname()),
    state_dir: nonEmpty().default('./var'),
  })
  .prefault({});

export const agentRestartRequired = ['agent.state_dir'];
