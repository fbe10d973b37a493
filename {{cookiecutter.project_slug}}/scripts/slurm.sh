#!/usr/bin/env bash
# Multi-node, multi-GPU training on SLURM: one task per GPU, each running the same train.py.
# Lightning reads ranks, world size and the main address from SLURM's variables: nothing to set.
#
#   sbatch scripts/slurm.sh                                              # 2 nodes x 4 GPUs, the default config
#   sbatch --nodes 4 scripts/slurm.sh --model.optimizer.init_args.lr 0.006   # train.py flags after the script
#
# One command for the first start and every restart: 2 minutes before the time limit (SIGUSR1
# below), or on a preemption (SIGTERM), the run saves and the job is requeued; when SLURM starts
# it again, it continues the same run in the same logs/version_N directory, to the end and its test.
#
# Global batch = data.batch_size x GPUs per node x nodes x trainer.accumulate_grad_batches.
#SBATCH --job-name=train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4         # one process per GPU: keep equal to --gpus-per-node
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8           # for the DataLoader workers of each process
#SBATCH --time=04:00:00
#SBATCH --signal=SIGUSR1@120        # 2 minutes before the time limit: save, requeue, continue
#SBATCH --requeue
#SBATCH --output=logs/slurm-%j.out
set -euo pipefail

srun python train.py \
    --trainer.num_nodes "${SLURM_NNODES}" \
    --trainer.devices "${SLURM_NTASKS_PER_NODE}" \
    --trainer.strategy ddp \
    --data.num_workers "$((SLURM_CPUS_PER_TASK - 1))" \
    "$@"
