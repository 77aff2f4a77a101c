#!/bin/bash
#SBATCH --job-name=codeswarm-sw-abc
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --array=0-2%3
#SBATCH --time=02:00:00
#SBATCH --signal=TERM@60
#SBATCH --partition=gpu
#SBATCH --account=proj42
#SBATCH --gres=gpu:1
#SBATCH --exclusive
set -u
module load python/3.11
export PYTHONPATH='/work1/me/work space/codeswarm'
export CODESWARM_AGENTS_PER_TASK=8
cd '/work1/me/work space/codeswarm'
exec srun --kill-on-bad-exit=0 python3 -m hpc.codex_worker --mailbox '/work1/me/work space/codeswarm/mailbox' --settings '/work1/me/work space/codeswarm/swarms/sw-abc/worker.json' --swarm-id sw-abc
