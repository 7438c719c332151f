// The three-node cluster in routing mode tunnel (the default): VXLAN, the identity in the VNI.
import { clusterSuite } from './cluster-suite.ts';

clusterSuite('tunnel');
