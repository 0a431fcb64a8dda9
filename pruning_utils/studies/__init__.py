"""The experiments: autoencoder set-ups, rival methods, the comparison, the ablation study and benchmarks.

``autoencoders`` (notebooks 03-05), ``folded_models`` (notebook 05), ``baselines`` (magnitude pruning,
Torch-Pruning L1, AutoPruner), ``comparison`` (notebook 07), ``ablations`` (notebook 08), ``bench`` (inference
time, RAM, VRAM; notebook 06), ``train_speed`` (training throughput per speed option), ``gan`` (notebook 11).
"""
