/**
 * Pod IPAM for one lab node: 10.244.<k>.2–254 (the node's /24; .1 is its router), file-backed
 * (ipam.json in the node's state dir) so a restarted agent hands every pod the address it had;
 * the same pod always gets the same IP. The allocator itself is the pod-CIDR one of host mode
 * (src/common/cidr-ipam.ts); the lab names its own errors.
 */
import { createCidrIpam, parseCidr, type CidrIpam } from '../common/cidr-ipam.ts';
import { POD_CIDR_PREFIX } from './names.ts';

export type PodIpam = CidrIpam;

export function createPodIpam(file: string, nodeIndex: number): PodIpam {
  const cidr = `${POD_CIDR_PREFIX}.${nodeIndex}.0/24`;
  return createCidrIpam(file, parseCidr(cidr), {
    corrupt: { code: 'LAB_IPAM_CORRUPT', hint: 'run `membrane down` and `membrane up` to rebuild the lab' },
    exhausted: { code: 'LAB_IPAM_EXHAUSTED', message: `node${nodeIndex}: no free pod address in ${cidr} (253 pods)`, hint: 'delete pods or add a node (`membrane up --nodes N`)' },
  });
}
