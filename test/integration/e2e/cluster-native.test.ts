// The three-node cluster in routing mode native: routes on the lab underlay, identities from the ipcache.
import { clusterSuite } from './cluster-suite.ts';

clusterSuite('native');
