"""Replay a rosbag2 file into the node with simulated time:
`ros2 launch llava4d_ros replay.launch.py bag:=/path/to/bag [rate:=1.0]`.

The bag's topics are those written by `llava4d-make-bag` (synthetic scenes or an RGB-D folder);
remap with the *_topic arguments for other bags. `ros2 bag play --clock` drives /clock.
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    args = [
        DeclareLaunchArgument("bag", description="rosbag2 directory or .mcap file"),
        DeclareLaunchArgument("rate", default_value="1.0"),
        DeclareLaunchArgument("rgb_topic", default_value="/camera/color/image_raw"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image_raw"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info"),
        DeclareLaunchArgument("model_path", default_value=""),
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("llava4d_ros"), "launch",
                                  "llava4d.launch.py"])),
        launch_arguments={
            "use_sim_time": "true",
            "rgb_topic": LaunchConfiguration("rgb_topic"),
            "depth_topic": LaunchConfiguration("depth_topic"),
            "camera_info_topic": LaunchConfiguration("camera_info_topic"),
            "model_path": LaunchConfiguration("model_path"),
        }.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock",
             "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    return LaunchDescription([*args, node, play])
