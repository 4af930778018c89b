// The telemt component and the API areas it serves, for src/wiring.ts and for tests.
import type { ComponentContext } from '../agent.js';
import { discoveryRoutes } from '../api/routes/discovery.js';
import { telemtRoutes } from '../api/routes/telemt.js';
import type { Router } from '../api/types.js';
import { TelemtComponent, type TelemtDeps } from './component.js';

export function wireTelemt(ctx: ComponentContext, deps: TelemtDeps): { component: TelemtComponent; routers: Router[] } {
  const component = new TelemtComponent(ctx, deps);
  return { component, routers: [telemtRoutes(component), discoveryRoutes(component)] };
}
