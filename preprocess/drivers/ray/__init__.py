"""The batch job on a cluster (Ray Data): :func:`preprocess.drivers.ray.job.run_ray_job`.

Ray is an optional extra (``pip install 'preprocess[ray]'``); nothing here is imported by the
rest of the package.
"""
